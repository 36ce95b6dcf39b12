"""The appliance's own services: vendor defaults, settings on the backup drive, the network,
power."""
