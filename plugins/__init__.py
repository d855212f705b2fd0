"""specplug.plugins — thin engine adapters, one package per engine, named after its headline method."""
