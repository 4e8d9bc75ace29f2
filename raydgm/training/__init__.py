"""Fit loops (torch only: no Ray, no MLflow): generators, feature-extractor networks, the
semi-supervised classifier."""
