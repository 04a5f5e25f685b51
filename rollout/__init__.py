"""Model promotion and staged rollout: controller, AWS adapter, fleet simulator and CLI."""
