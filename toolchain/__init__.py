"""The compiler: NIR in, a versioned Loihi program out (IR, NIR import, passes, program and result formats, mapping, design rules). Imports nothing outside itself."""
