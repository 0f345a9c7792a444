module 127.0.0.1/privmod.git

go 1.22
