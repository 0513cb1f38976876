"""Events as collectors write them: field resolution by profile, and event time."""
