"""What every layer of apkit uses: errors, the registry, shared names, input checks, module
mechanics, atomic I/O and the distributed context.

Each submodule is public and imports only the standard library, torch and the modules listed
before it here: ``version``, ``errors``, ``names``, ``registry``, ``validation``, ``io``,
``modules``, ``distributed``.
"""
