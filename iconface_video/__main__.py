from iconface_video.cli import main

main()
