compile examples/quickstart.mgen --passes schedule
