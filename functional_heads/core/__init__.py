"""The method: settings, S_v, head identification, rescaling (hooks and folded weights), the dynamic
variant, export, and `check` (does the method's machinery work on a model)."""
