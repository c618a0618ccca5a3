"""Multi-model hosting: the approved version's artifact under the multi-model prefix, as TargetModel selects it."""
