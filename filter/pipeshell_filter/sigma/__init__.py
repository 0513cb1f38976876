"""The rule language: Sigma rule files, conditions, modifiers, compilation, the correlation IR."""
