"""Plumbing every service uses: settings, logging, metrics, Redis connection, lifecycle."""
