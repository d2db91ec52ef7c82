"""Rate limits, budgets and virtual keys: admission before forwarding, settlement after usage."""
