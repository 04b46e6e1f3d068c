"""The rules of the matching app, one module per subject: zones, providers, bookings (with their
offers). The rpc methods, the zone REST routes and the admin call these functions."""
