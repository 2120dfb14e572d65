compile examples/quickstart.mgen --emit schedule
