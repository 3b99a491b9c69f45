# The runner's repo2docker configuration: deliberately empty.
#
# repo2docker loads a configuration file, Python code, from `--config`, which defaults to
# `repo2docker_config.py` in its current directory. run_repo2docker.py names this file
# explicitly and runs repo2docker from a folder it owns, so a `repo2docker_config.py` in a
# user's repository is never executed by the runner (which holds the build's AWS
# credentials and a privileged Docker engine). Every setting the runner needs is on its
# command line, where the tests can see it; keep this file free of code.
