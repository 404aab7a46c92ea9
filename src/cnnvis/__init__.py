from cnnvis.threads import default_passive_wait

default_passive_wait()  # before torch loads OpenMP: idle threads sleep, so a busy machine is not 100x slower
