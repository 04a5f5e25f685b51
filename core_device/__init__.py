"""A local stand-in of the Greengrass nucleus: runs the built components through their recipes.

Tooling for development and tests, never shipped to devices (nothing in ``edge_component/``
imports it). Each module models one part of the nucleus and cites the nucleus source or the
Greengrass developer guide next to every rule it models.
"""
