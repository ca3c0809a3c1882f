"""vfio-flavourd: give each PCI device the most specific VFIO driver its policy asks for."""

__version__ = "0.1.0"
