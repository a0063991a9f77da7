"""Video analysis: shots, face tracks, identities across shots, harvested references, the analysis file.

Entry points (imported from their modules, so importing this package stays light):

- ``iconface_video.analysis.video.analyze_video(input, output, AnalyzeSettings(), progress)``
  (``AnalyzeSettings`` in ``analysis.settings``)
- ``iconface_video.analysis.photos.add_photo_references(analysis_path, refs, settings)``
- ``iconface_video.analysis.schema.load_analysis(path) -> Analysis`` / ``save_analysis(analysis, path)``
"""
