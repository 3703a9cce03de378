import sys

from keras_retinanet.cli.retinanet import main

sys.exit(main())
