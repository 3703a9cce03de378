import sys

from keras_retinanet.cli import main

sys.exit(main())
