"""Amazon MWAA: the bundle (DAGs prefix, ``plugins.zip``, ``requirements.txt``, ``startup.sh``) and its deploy."""
