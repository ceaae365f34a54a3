"""Settings mixins, one per concern; `service.settings.Settings` composes them into the one Settings class."""
