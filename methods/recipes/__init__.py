"""Training recipes, one module per method: optimizer, learning rate and its
schedule, epochs, batch and architecture per dataset, each value with the
published source it comes from."""
