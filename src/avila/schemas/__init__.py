"""Request and response models (msgspec Structs): validated once, at the edge."""
