"""The pipeline: one function per stage (config -> cached artifact, ``stages``), the artifact store,
Parquet tables, the Ray Data plumbing (the only user of Ray Data), generation, features, the
quality report and its figures. Nothing here talks to MLflow."""
