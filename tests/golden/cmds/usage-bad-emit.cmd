compile examples/quickstart.mgen --emit nonsense
