compile examples/quickstart.mgen --emit placement --json
