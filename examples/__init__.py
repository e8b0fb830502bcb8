"""Example applications that use pgpulse; each folder has a README."""
