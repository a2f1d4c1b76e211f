"""The workspace service: runs, model registry, images, deployments (see DESIGN.md)."""
