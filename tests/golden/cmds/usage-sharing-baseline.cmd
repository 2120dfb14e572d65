compile examples/quickstart.mgen --emit sharing --baseline
