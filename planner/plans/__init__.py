"""Plans: the search over deployments (serving plans under SLOs, training configurations that fit) and batches."""
