"""Model zoos: data sets, architecture families, training and storage."""
