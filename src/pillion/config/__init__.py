"""Resource and Configuration files: parsing and validation, nothing that runs them.

Import from the modules (``config.loader``, ``config.manifests``): this package
imports nothing itself, so code that only needs the dataclasses does not pay for
the YAML parser.
"""
