"""A Django project for the tests: the sample project plus ``Jar``, a client whose answers
need what Django makes hard (several cookies, a query string, a long stream)."""
