
#!/bin/bash

# Entry point for bootstrapping runtime environment and invoking remote function

set -eu

PERSISTENT_CACHE_DIR=${SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY:-/opt/ml/cache}
export CONDA_PKGS_DIRS=${PERSISTENT_CACHE_DIR}/sm_remotefunction_user_dependencies_cache/conda/pkgs
printf "INFO: CONDA_PKGS_DIRS is set to '$CONDA_PKGS_DIRS'\n"
export PIP_CACHE_DIR=${PERSISTENT_CACHE_DIR}/sm_remotefunction_user_dependencies_cache/pip
printf "INFO: PIP_CACHE_DIR is set to '$PIP_CACHE_DIR'\n"

printf "INFO: /opt/ml/input/config/resourceconfig.json:\n"
cat /opt/ml/input/config/resourceconfig.json

printf "INFO: Bootstraping runtime environment.\n"
python /opt/ml/input/data/sagemaker_remote_function_bootstrap/bootstrap_runtime_environment.py "$@"
source /opt/ml/input/sm_training.env

if [ -d sagemaker_remote_function_workspace ]
then
    if [ -f "remote_function_conda_env.txt" ]
    then
        cp remote_function_conda_env.txt sagemaker_remote_function_workspace/remote_function_conda_env.txt
    fi
    printf "INFO: Changing workspace to sagemaker_remote_function_workspace.\n"
    cd sagemaker_remote_function_workspace
fi

if [ -f "remote_function_conda_env.txt" ]
then
    conda_env=$(cat remote_function_conda_env.txt)

    if which mamba >/dev/null; then
        conda_exe="mamba"
    else
        conda_exe="conda"
    fi

    printf "INFO: Invoking remote function inside conda environment: $conda_env.\n"
    printf "INFO: $conda_exe run -n $conda_env python -m sagemaker.remote_function.invoke_function \n"
    $conda_exe run -n $conda_env python -m sagemaker.remote_function.invoke_function "$@"
else
    printf "INFO: No conda env provided. Invoking remote function\n"
    printf "INFO: python -m sagemaker.remote_function.invoke_function \n"
    python -m sagemaker.remote_function.invoke_function "$@"
fi
