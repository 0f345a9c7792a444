module example.com/privateapp

go 1.22

require 127.0.0.1/privmod.git v1.0.0
