"""The core contract every layer shares: stage, records, errors, configs, keys and the
output schema. It imports nothing from the layers above it."""
