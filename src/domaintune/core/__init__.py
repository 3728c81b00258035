"""Bottom layer: the config schema, errors, atomic io and process/hardware facts. Imports no other domaintune
package.
"""
