"""Deployment artefacts generated from code: the Grafana dashboard (``python -m
gristmill.deploy.grafana``). Needs the ``deploy`` extra (``pip install gristmill[deploy]``)."""
