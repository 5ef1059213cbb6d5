"""The online endpoint: the offline job's stages as Ray Serve deployments."""
