"""A local stand-in of the Greengrass nucleus that runs built components on one machine (tooling only)."""
