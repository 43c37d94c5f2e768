"""The web pages: locale routing, sign-in session, the queue dashboard, templates and assets."""
