"""Push providers: one module per service, each implementing `base.Provider`."""
