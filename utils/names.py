"""Names the command lines accept, in a module that imports nothing heavy so a
script can build its parser (and evaluate stored codes) without torchvision."""

DATASETS = ("facescrub", "youtube", "cfw", "vggface2", "folder", "synthetic")
HASHING_ARCHS = ("dfhnet", "sphere20", "sphere64", "resnet18", "resnet34", "resnet50")
