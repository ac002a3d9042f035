"""The one place that patches models: per instance, recorded, undone exactly."""
