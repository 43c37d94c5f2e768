"""Users: the owner rows of assets and services, and erasing everything a user owns."""
