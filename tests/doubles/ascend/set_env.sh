# Stands in for /usr/local/Ascend/ascend-toolkit/set_env.sh: the tool doubles on PATH and
# PYTHONPATH. ASCEND_DOUBLES is where this folder is (default: beside this file's usual copy).
ASCEND_DOUBLES="${ASCEND_DOUBLES:-/opt/ascend-doubles}"
export PATH="$ASCEND_DOUBLES/bin:$PATH"
export PYTHONPATH="$ASCEND_DOUBLES/python${PYTHONPATH:+:$PYTHONPATH}"
export ASCEND_TOOLKIT_HOME="$ASCEND_DOUBLES"
