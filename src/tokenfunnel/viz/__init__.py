"""Pictures: which image regions survive each compression stage, and Pareto plots."""
