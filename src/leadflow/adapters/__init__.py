"""Adapters: storage, HTTP, mail. They translate and persist; they hold no business rules."""
