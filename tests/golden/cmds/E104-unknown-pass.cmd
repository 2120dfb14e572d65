compile examples/quickstart.mgen --passes merge,merj
