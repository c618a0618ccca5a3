"""Local executor: runs a SageMaker pipeline definition JSON on this machine, without Docker or AWS."""
