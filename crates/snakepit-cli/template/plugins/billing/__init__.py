"""The billing plugin package: job steps over the billing connector."""
