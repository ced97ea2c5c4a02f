"""ImageNet-style classification datasets, in the layouts mmpretrain uses."""
import os
import os.path as osp

from mmengine.dataset import BaseDataset

from mmrecprune.registry import DATASETS

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


@DATASETS.register_module()
class ImageNet(BaseDataset):
    """Classification images listed in an annotation file or stored in class folders.

    Layouts (the same as mmpretrain's ``CustomDataset`` / ``ImageNet``):

    - ``ann_file`` given: each line is ``relative/path.JPEG label_index``; paths are relative
      to ``data_root/data_prefix``.
    - no ``ann_file``: ``data_root/data_prefix/<class_name>/<image>``; classes are the sorted
      folder names (unless ``metainfo['classes']`` fixes them).

    Args:
        data_root (str): dataset root.
        ann_file (str): optional annotation list. Defaults to ``''`` (class folders).
        data_prefix (str | dict): image folder below ``data_root``; ``'train'`` or
            ``dict(img_path='train')``.
        **kwargs: passed to :class:`mmengine.dataset.BaseDataset`.
    """

    def __init__(self, data_root='', ann_file='', data_prefix='', **kwargs):
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        super().__init__(data_root=data_root, ann_file=ann_file, data_prefix=data_prefix,
                         **kwargs)

    def load_data_list(self):
        img_root = self.data_prefix['img_path']
        if not osp.isdir(img_root):
            raise FileNotFoundError(f'ImageNet image folder {img_root!r} does not exist; set '
                                    '`data_root` and `data_prefix` in the dataset config.')
        if self.ann_file:
            return self._from_ann_file(img_root)
        return self._from_folders(img_root)

    def _from_ann_file(self, img_root):
        data_list = []
        with open(self.ann_file) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.strip().rsplit(' ', 1)
                if not parts[0]:
                    continue
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    raise ValueError(f'{self.ann_file}:{lineno}: expected "path label", '
                                     f'got {line.strip()!r}')
                data_list.append(dict(img_path=osp.join(img_root, parts[0]),
                                      gt_label=int(parts[1])))
        return data_list

    def _from_folders(self, img_root):
        classes = self._metainfo.get('classes') or sorted(
            d for d in os.listdir(img_root) if osp.isdir(osp.join(img_root, d)))
        if not classes:
            raise FileNotFoundError(f'no class folders found in {img_root!r}')
        self._metainfo['classes'] = tuple(classes)
        data_list = []
        for label, name in enumerate(classes):
            folder = osp.join(img_root, name)
            for fname in sorted(os.listdir(folder)):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    data_list.append(dict(img_path=osp.join(folder, fname), gt_label=label))
        return data_list
