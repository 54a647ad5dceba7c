"""Code shared by the three blueprints: settings, table storage, names, and (as later issues add them)
the Microsoft clients and the alert model."""
