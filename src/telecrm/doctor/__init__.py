"""`telecrm doctor`: checks a deployment's configuration and reports ok / warn / fail with advice."""
